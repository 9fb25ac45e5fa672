"""Data: image checks, the HTTP download and safe unzip, the synthetic dataset, the raw dataset build
(``download`` stage) and the stratified train/val split (``stratified_split`` stage)."""
