"""MedR1 training: LoRA distillation of student models on the MedR1 dataset (installed with the `train` extra)."""
