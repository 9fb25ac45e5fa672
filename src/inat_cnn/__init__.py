"""inat-cnn: a reproducible DVC pipeline that trains and compares image classifiers on iNaturalist-12K."""
