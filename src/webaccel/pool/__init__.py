"""The async resource pool: workers, routing, queues, batching, scaling, health, retries."""
