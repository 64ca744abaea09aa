"""binder-prebuild: the launch side (badge click -> server)."""
