"""Tools for deploying ``template.yaml`` to AWS; they emulate nothing.

``params`` turns ``provisioning_lambda/config.json`` into ``sam deploy`` parameter overrides
(``make params``, ``make deploy``; the offline stack reads config.json through it too);
``deploy_safety`` computes what changing each template parameter does to a running stack
(docs/parameters.md).
"""
