"""Small adapters over ACM PCA, IoT Core and DynamoDB: the only code here that imports boto3."""
