"""binder-prebuild: the prebuild side (webhook -> image)."""
