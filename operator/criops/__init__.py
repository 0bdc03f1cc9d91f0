"""criops operator: reconciles RuntimeNode objects (see crds/runtimenode.yaml)."""
