//! The data a burnchain operation carries: its transaction's first output is
//! `OP_RETURN` followed by exactly one push, which starts with the network's magic and
//! the operation byte.

use bitcoin::{Transaction, opcodes::all::OP_RETURN, script::Instruction};

use crate::ops::enrollment::Magic;

/// The single push after `OP_RETURN` in `tx`'s first output.
pub fn first_output_push(tx: &Transaction) -> Option<&[u8]> {
    let first = tx.output.first()?;
    let mut instructions = first.script_pubkey.instructions();
    match (
        instructions.next(),
        instructions.next(),
        instructions.next(),
    ) {
        (Some(Ok(Instruction::Op(op))), Some(Ok(Instruction::PushBytes(push))), None)
            if op == OP_RETURN =>
        {
            Some(push.as_bytes())
        }
        _ => None,
    }
}

/// The payload of operation `op` in `tx`, after the magic and the operation byte,
/// when the data is exactly `len` bytes long.
pub fn operation(tx: &Transaction, magic: Magic, op: u8, len: usize) -> Option<&[u8]> {
    let data = first_output_push(tx).filter(|d| d.len() == len)?;
    let (head, payload) = data.split_first_chunk::<3>()?;
    let [m0, m1, found] = *head;
    ([m0, m1] == magic.bytes() && found == op).then_some(payload)
}
