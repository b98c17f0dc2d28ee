"""Issue 6: time until a pod can use a volume, context mount versus recursive relabel."""
