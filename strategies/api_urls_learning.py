"""REST routes for learning (included from quantweb/api_urls.py under /api/)."""

from rest_framework.routers import DefaultRouter

from strategies import api_learning

router = DefaultRouter()
router.include_format_suffixes = False
router.include_root_view = False
router.register("learning/models", api_learning.ModelVersionViewSet, basename="api-learning-model")
router.register("learning/candidates", api_learning.CandidateViewSet, basename="api-learning-candidate")
router.register("learning/tuning-runs", api_learning.TuningRunViewSet, basename="api-learning-tuning-run")
router.register("learning/bandit", api_learning.BanditViewSet, basename="api-learning-bandit")

urlpatterns = router.urls
