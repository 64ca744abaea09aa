"""Builder backends: KubernetesBuilder (build pods) and LocalBuilder (local Docker/Podman)."""
