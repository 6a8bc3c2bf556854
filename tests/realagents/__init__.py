"""Real coding agents (pinned npm releases) driven headless against the fake model server, for
tests of what vigil sees of them. `install.sh` pre-installs them; `agents.py` knows how to run
each; `netns.py` runs one inside a loopback-only network namespace."""
