//! Shared helpers of the Rakis examples.
