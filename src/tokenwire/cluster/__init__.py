"""Scale-out on Redis: stateless gateways and a pool of workers meeting in Redis."""
