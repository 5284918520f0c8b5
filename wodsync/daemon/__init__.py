"""The GitOps daemon: follows the repository, deploys what merged, keeps hosts converged."""
