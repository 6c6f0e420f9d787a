// The guest agent library; its code lands with the agent issue.
