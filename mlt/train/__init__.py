"""Training loops: plain torch epochs (`loop`) and their Ray Train wiring (`pretrain`)."""
