"""What every gRPC service shares: mTLS, interceptors, truthful health, metrics, draining."""
