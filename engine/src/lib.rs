//! Quiver storage engine.
