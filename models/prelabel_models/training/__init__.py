"""`prelabel train`: trains or fine-tunes a model package on an image/label folder."""
