"""Tools for deploying ``template.yaml`` to AWS and taking it down again; they emulate nothing.

``params`` turns ``provisioning_lambda/config.json`` into ``sam deploy`` parameter overrides
(``make params``, ``make deploy``; the offline stack reads config.json through it too);
``answers`` adds a samconfig environment's answers (``[first]``) to them; ``preflight`` checks
the machine and the account before ``make deploy`` installs anything (with
``template_facts``, standard library only); ``smoke``, ``ca_cert`` and ``destroy`` are
``make smoke``, ``make ca-cert`` and ``make destroy``, on a deployed stack (``deployed``) or,
but ``destroy``, on the offline one's state file; ``deploy_safety`` computes what changing
each template parameter does to a running stack (docs/parameters.md).
"""
