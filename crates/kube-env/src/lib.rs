//! Real multi-cluster Kubernetes control planes for tests. (In progress.)
