"""Post-training: conversations, SFT, RL."""
