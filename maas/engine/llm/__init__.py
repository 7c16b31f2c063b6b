"""The LLM engine: scheduler, KV cache, model runner, sampler, the step loop and its two transports."""
