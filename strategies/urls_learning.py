"""Pages under STRATEGY for learning (included from quantweb/urls.py at /strategy/models/)."""

from django.urls import path

from strategies import views_learning

urlpatterns = [
    path("<int:pk>/action/", views_learning.model_action, name="learning-model-action"),
    path("candidates/<int:pk>/version/", views_learning.candidate_version, name="learning-candidate-version"),
    path("tuning/", views_learning.start_tuning, name="learning-start-tuning"),
]
