"""Pure numeric/trading logic: stdlib + numpy/pandas only, no Django (see STYLE.md)."""
