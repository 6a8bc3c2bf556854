"""Real Bun-compiled agents (Claude Code, opencode) for the TLS locator's tests: pinned releases
installed from npm on first use, and a driver that runs one under vigil against the fake model
server inside a loopback-only network namespace."""
