//! A JetStream stream read back by the tests.

use serde_json::Value;

/// Everything in `stream` of the `nats-server` on `port`, in stream order:
/// `(Nats-Msg-Id, body)`. Panics if the stream lost messages from its start.
pub fn read_stream(port: u16, stream: &str) -> Vec<(String, Value)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let client = async_nats::connect(format!("127.0.0.1:{port}"))
            .await
            .expect("nats-server answers");
        let stream = async_nats::jetstream::new(client)
            .get_stream(stream)
            .await
            .expect("the stream exists");
        let state = stream.get_info().await.expect("stream info").state;
        assert_eq!(state.first_sequence, 1, "nothing removed from the stream");
        let mut messages = Vec::with_capacity(state.messages as usize);
        for sequence in 1..=state.last_sequence {
            let message = stream
                .get_raw_message(sequence)
                .await
                .expect("every message is kept");
            let id = message
                .headers
                .get("Nats-Msg-Id")
                .expect("every message has an id")
                .to_string();
            let body = serde_json::from_slice(&message.payload).expect("a JSON body");
            messages.push((id, body));
        }
        messages
    })
}
