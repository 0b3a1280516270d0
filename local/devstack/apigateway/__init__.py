"""Stands in for Amazon API Gateway (REST API, Lambda proxy integration) and its Cognito
authorizer.

``api_model`` reads the routes, authorizers, request models and gateway responses of the
template's API; ``gateway`` serves them over HTTP in front of the Lambda functions;
``gateway_responses`` answers API Gateway's own errors as the template shapes them;
``throttle`` applies the stage's throttling.
"""
