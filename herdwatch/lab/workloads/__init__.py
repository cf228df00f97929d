"""Programs the lab runs inside its hosts: the services of normal life and the harmless attack tools
(connections only inside the lab, CPU loops only). Never imported by the agent."""
