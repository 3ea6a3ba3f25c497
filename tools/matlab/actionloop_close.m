function actionloop_close(client)
%ACTIONLOOP_CLOSE  Close a publisher (actionloop_publisher) or subscriber (actionloop_subscriber).
    actionloop_zmq('close', client.socket);
end
