//! The burnchain operations Tenure reads from Bitcoin transactions.
//!
//! Each operation is a transaction whose first output is `OP_RETURN` followed by one
//! push that starts with the network's magic and the operation byte ([`op_return`]);
//! what else the transaction must hold is the operation's own rule:
//!
//! - [`enrollment`] (`@`, SIP-001): a producer enrolls for a term and pays PoX or burn
//!   outputs;
//! - [`key_registration`] (`^`, SIP-001): the leader key an enrollment names, which
//!   only its owner may enroll with;
//! - [`stake`] (`S`, seed 003): a stake locked by Bitcoin itself, a lottery ticket;
//! - [`announce`] (seed 000): the term UTXO spent to commit the latest block.

pub mod announce;
pub mod enrollment;
pub mod key_registration;
pub mod op_return;
pub mod stake;
