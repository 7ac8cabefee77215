"""Developer tools and test clients that no deployed path uses: MQTT 5 test
clients, the protobuf round-trip check, and the code generator for `.proto`.
"""
