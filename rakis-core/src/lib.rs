//! rakis-core (being written)
