"""Pure functions over predictions: metrics, calibration, bootstrap intervals, operating points, error cases,
and comparisons between runs."""
