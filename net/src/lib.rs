//! Quiver network front ends. Every socket the broker opens lives in this crate;
//! the engine never touches one.

pub mod kafka;
pub mod quic;
pub mod service;
