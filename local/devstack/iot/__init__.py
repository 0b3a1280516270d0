"""Stands in for AWS IoT Core's data plane: MQTT over mutual TLS, the rules engine, and the
iot-data API. (Its registry, things and certificates, is moto's.)

``broker`` is the MQTT broker (amqtt) that admits devices as IoT Core does; ``topic_rules``
runs the template's topic rules on what devices publish; ``iot_data`` serves ``Publish`` and
``DeleteConnection``.
"""
