//! End-to-end tests: a real gateway on 127.0.0.1:0, real WebSockets, the real echo plugin built
//! from source as a WASM component, real agents.toml files.

mod call;
mod call_loop;
mod console;
mod console_phone;
mod deploy;
mod echo;
mod event_webhooks;
mod events;
mod fleet;
mod frozen_contract;
mod fuzz;
mod js_plugins;
mod keypad;
mod mcp;
mod metrics;
mod noise;
mod offline;
mod openai_stages;
mod outbound;
mod pipeline;
mod python_plugins;
mod realtime;
mod reload;
mod robustness;
mod routing;
mod signatures;
mod stages;
mod tools;
mod twilio_rest;
