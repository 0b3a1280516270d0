"""Stands in for AWS CloudFormation (with the SAM transform): ``sam deploy`` on this machine.

``template`` reads ``template.yaml`` and expands it with the SAM translator; ``rules`` checks the
template's ``Rules`` against the parameters; ``intrinsics`` evaluates Ref, Fn::GetAtt, Fn::Sub
and the others; ``deployer`` creates every resource in dependency order, each by its service's
module in ``resources/``; ``custom_resource`` runs a custom resource's handler with a
CloudFormation-shaped event and checks its reply as CloudFormation does.
"""
