"""`make demo`: piagent in front of a real model (SmolLM2 on llama.cpp), no Ollama needed."""
