"""wodsync: GitOps reconciler for Workshops-on-Demand JupyterHub hosts."""
