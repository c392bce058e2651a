"""tokenwire: the streaming layer between LLM providers and the people and systems that consume
their answers."""
