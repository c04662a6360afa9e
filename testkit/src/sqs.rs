//! `moto_server` (an SQS-compatible server, PyPI `moto[server]`) with a FIFO queue, and
//! a client of the test's own to read it back.

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use serde_json::Value;

use crate::{free_port, require_tool, Server};

/// The credentials and region every client in the test process (and every engine it
/// starts) uses: moto takes any.
pub const AWS_ENV: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// A moto server with one FIFO queue.
pub struct Moto {
    pub server: Server,
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_sqs::Client,
    pub queue_url: String,
}

impl Moto {
    /// Starts moto on a free port with the FIFO queue `queue` (name ending in `.fifo`);
    /// `None` (after [`require_tool`]'s loud skip) when moto is not installed.
    pub fn start(test: &str, queue: &str) -> Option<Moto> {
        if !require_tool(test, &["moto_server"]) {
            return None;
        }
        for (key, value) in AWS_ENV {
            std::env::set_var(key, value);
        }
        let port = free_port();
        let args = ["-H", "127.0.0.1", "-p", &port.to_string()].map(String::from);
        let server = Server::start("moto_server", &args, port);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let config = runtime.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(format!("http://127.0.0.1:{port}"))
                .load(),
        );
        let client = aws_sdk_sqs::Client::new(&config);
        let queue_url = runtime
            .block_on(
                client
                    .create_queue()
                    .queue_name(queue)
                    .attributes(QueueAttributeName::FifoQueue, "true")
                    .send(),
            )
            .expect("moto creates the queue")
            .queue_url
            .expect("a queue URL");
        Some(Moto {
            server,
            runtime,
            client,
            queue_url,
        })
    }

    /// The endpoint to give a sink (`SQS_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// Receives (and deletes) everything in the queue, in the order received:
    /// `(MessageDeduplicationId, body)`.
    pub fn drain(&self) -> Vec<(String, Value)> {
        let mut messages = Vec::new();
        self.runtime.block_on(async {
            loop {
                let received = self
                    .client
                    .receive_message()
                    .queue_url(&self.queue_url)
                    .max_number_of_messages(10)
                    .message_system_attribute_names(
                        MessageSystemAttributeName::MessageDeduplicationId,
                    )
                    .send()
                    .await
                    .expect("moto answers");
                let batch = received.messages.unwrap_or_default();
                if batch.is_empty() {
                    return;
                }
                let mut deletes = Vec::new();
                for (i, message) in batch.iter().enumerate() {
                    let id = message
                        .attributes()
                        .and_then(|a| a.get(&MessageSystemAttributeName::MessageDeduplicationId))
                        .expect("FIFO messages carry their deduplication id")
                        .clone();
                    let body = serde_json::from_str(message.body().unwrap_or_default())
                        .expect("a JSON body");
                    messages.push((id, body));
                    deletes.push(
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(message.receipt_handle().unwrap_or_default())
                            .build()
                            .expect("id and handle set"),
                    );
                }
                self.client
                    .delete_message_batch()
                    .queue_url(&self.queue_url)
                    .set_entries(Some(deletes))
                    .send()
                    .await
                    .expect("moto deletes");
            }
        });
        messages
    }
}
