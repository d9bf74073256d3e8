//! The Picket fleet backend (skeleton).
