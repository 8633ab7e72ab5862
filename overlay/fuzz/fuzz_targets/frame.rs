//! Frames on the hello and request-response protocols come from any peer: the frame
//! codec and the checks after it must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tenure_overlay::{
    Hello, NetworkId,
    bodies::GossipEnvelope,
    hello::HELLO_FRAME_LIMIT,
    rpc::{RpcRequest, RpcResponse},
    wire::{decode_body, decode_frame},
};

const RPC_LIMIT: usize = 8 * 1024 * 1024;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(hello) = decode_frame::<Hello>(bytes, HELLO_FRAME_LIMIT) {
        let _ = hello.check_bounds();
        if let Ok(net) = NetworkId::new("fuzz") {
            let _ = hello.check_peer(&net);
        }
    }
    let _ = decode_frame::<RpcRequest>(bytes, RPC_LIMIT);
    let _ = decode_frame::<RpcResponse>(bytes, RPC_LIMIT);
    let _ = decode_body::<GossipEnvelope>(bytes, RPC_LIMIT);
});
