"""Pretraining a C++ code model: corpus -> tokenizer -> shards -> NTP+FIM training (`python -m pretrain`)."""
