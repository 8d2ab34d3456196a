"""On-Policy Context Distillation: losses, trainer, baselines, evaluation (see the distill issue)."""
