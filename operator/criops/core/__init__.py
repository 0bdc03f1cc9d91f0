"""Pure decisions of the operator: no kopf, no kubernetes client, no I/O."""
