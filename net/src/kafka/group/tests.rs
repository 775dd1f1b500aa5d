//! Scenario tests of the group coordinator.
