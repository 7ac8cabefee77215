"""The IoT-Core-style gateway: MQTT 5 shared subscriptions → rules table →
Lambda-style handlers, acknowledging only what is stored or dead-lettered."""
