"""Using a trained run: probabilities for images (predictor), evaluation on other data, Grad-CAM."""
