"""Pure functions over predictions: metrics, calibration, confidence intervals, operating points, error cases,
and comparisons between runs."""
