"""Tests of the deployment files: manifests, Helm chart, Dockerfile (offline)."""
