"""The durable store of episodes, knowledge and runs."""
