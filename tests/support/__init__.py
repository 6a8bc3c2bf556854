"""Helpers the tests share: running vigil and vigild, cgroup bookkeeping, wire-capture builders,
fake endpoints. Test modules import from here, never from one another, so one missing optional
package stops only the tests that need it."""
