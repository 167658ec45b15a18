#!/usr/bin/python3
"""The lab's stand-in for whoever is on call: the stack's SNS topic (moto_server),
with an SQS queue subscribed to it, as an on-call tool would subscribe.

Usage:
  alert-inbox.py ENDPOINT_URL CA_BUNDLE create TOPIC_ARN
      creates the topic of TOPIC_ARN and the queue, subscribes the queue;
      prints {"topic": ..., "queue": ...}
  alert-inbox.py ENDPOINT_URL CA_BUNDLE drain TOPIC_ARN
      receives and deletes every message on the queue; prints one JSON line
      per notification: {"subject": ..., "message": ..., "timestamp": ...}
      (the SNS envelope's fields, as SNS delivers to SQS)
"""
import json
import sys

import boto3

QUEUE = "pgha-lab-alert-inbox"


def clients(endpoint, ca_bundle, region):
    # moto accepts any key pair; the Alertmanagers sign with their instance role's (lab/assets/imds.py).
    options = dict(region_name=region, endpoint_url=endpoint, verify=ca_bundle,
                   aws_access_key_id="lab-operator", aws_secret_access_key="lab-operator")
    return boto3.client("sns", **options), boto3.client("sqs", **options)


def main():
    endpoint, ca_bundle, command, topic_arn = sys.argv[1:5]
    region, name = topic_arn.split(":")[3], topic_arn.split(":")[5]
    sns, sqs = clients(endpoint, ca_bundle, region)
    if command == "create":
        created = sns.create_topic(Name=name)["TopicArn"]
        if created != topic_arn:
            sys.exit(f"alert-inbox: moto created {created}, not {topic_arn} (the account id differs)")
        queue_url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
        print(json.dumps({"topic": topic_arn, "queue": queue_arn}))
    elif command == "drain":
        queue_url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
        while True:
            received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not received:
                break
            for message in received:
                envelope = json.loads(message["Body"])
                print(json.dumps({"subject": envelope.get("Subject"), "message": envelope.get("Message"),
                                  "timestamp": envelope.get("Timestamp")}))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    else:
        sys.exit(f"alert-inbox: unknown command {command}")


if __name__ == "__main__":
    main()
