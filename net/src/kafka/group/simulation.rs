//! Seeded randomized simulation of the group coordinator.
